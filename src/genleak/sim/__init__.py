"""Fast generative simulation of a particle detector (thesis ch. 4 SDI-GAN and ch. 5 ExpertSim).

Independent of the privacy packages: nothing outside ``genleak.sim`` imports it. ``data`` builds the
ch. 4 synthetic 2-D benchmark and a ZDC-like response simulator (the CERN data is not public),
``models`` holds the networks and losses, ``train`` the resumable training loop, ``metrics`` the
thesis' evaluation, ``bench`` the one-command benchmark and ``cli`` the ``genleak sim`` commands.
"""
