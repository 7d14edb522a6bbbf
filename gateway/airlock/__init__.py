"""Airlock: the only way a file leaves a ``sandbox``-mode notebook.

A request carries the file; automatic disclosure checks run at once (``checks``); a
supervisor who is not the requester approves or denies (``service``); an approved file
is released with its citation stamped in (``stamp``). Every step is audited.
"""
