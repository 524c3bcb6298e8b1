def helper() -> None:
    """Not a Plugin subclass: the loader must say so."""
