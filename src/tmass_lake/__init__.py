"""tmass-lake: the 2MASS Extended Mission as a HATS data lake."""
