"""The ``neuro`` command line."""
