"""The pure core of `durable`: history, commands, tasks, the context and the replay engine."""
