"""Export trained networks: NIR graphs and explicit fixed-point specs for hardware targets."""
