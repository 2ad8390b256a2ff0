"""Features: what a filter looks for, from a dataset (top examples) and by optimisation.

`scanning` finds each filter's strongest image patches over a collection (`sources`), keeps them as
`examples.TopExamples` (mergeable, cached on disk) and reports `progress`; `visualisation` optimises a picture
to excite a filter (Lucid's Fourier parametrisation and decorrelated colours).
"""
