"""Developer tools beside the library: the local collector, ``send`` and the command line.

The handler never imports these; they use the library's public parts and its wire rules.
"""
