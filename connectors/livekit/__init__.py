"""LiveKit: the live source of the flow (``source``) and the server API for ``web/`` (``api``).

The source's contract is docs/livekit-source.md; it names what each module here holds.
"""
