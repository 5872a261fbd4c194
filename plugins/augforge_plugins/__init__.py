"""First-party augforge plugins, registered through the `augforge` entry-point group."""
