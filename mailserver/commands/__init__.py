"""Groups of `hygie` subcommands, one module per concern."""
