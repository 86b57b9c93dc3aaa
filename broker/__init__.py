"""What every agent-fleet process shares: settings, names, events, Redis scripts, AMQP."""
