"""`ltx-extend`'s subcommands, one module each: `add_parser(subparsers)` sets up its
arguments beside `run(args)`, its handler (`cli.py` assembles them in `COMMANDS`'
order). `options.py` holds the argument types and option groups several share.

A module imports only what its parser needs at the top; its handler imports the rest
when it runs, so `ltx-extend validate` and `ltx-extend crd` start without loading torch.
"""
