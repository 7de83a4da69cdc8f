"""Independent transcriptions of the authors' networks, in their layout and
with their parameter names: the oracles that the tests compare mmhire's
backbones against, and the "authors' code" of the speed benchmark. Not part
of the installed package; ``docs/<backbone>.md`` describes each network."""
