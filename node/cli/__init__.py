"""The chainmill command line: one module per subcommand."""
