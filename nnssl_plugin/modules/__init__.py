"""nn.Modules of the methods: projector MLPs, the persistent key queue, the EMA helper."""
