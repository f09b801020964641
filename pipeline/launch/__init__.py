"""Starting N training ranks: launch commands are pure functions of the config, tested as data."""
