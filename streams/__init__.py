"""The Faust application around the rule engine: settings, app factory, agents, CLI."""
