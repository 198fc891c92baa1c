"""The ``mc`` subcommands, one module each; mc.cli wires them to argparse."""
