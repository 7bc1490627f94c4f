"""The ``iotpipe`` command line: each command builds the configuration and calls one object (app.commands)."""
