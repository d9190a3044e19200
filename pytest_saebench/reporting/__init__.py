"""Reports written by the controller at session end; none of them ever raises."""
