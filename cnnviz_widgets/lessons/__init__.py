"""The convolution lessons: how one layer computes, in numbers a learner can check.

`filter_effect` takes one filter's output apart into its per-channel partial sums, and `channel_ranking`
finds the channels that matter most without computing them all; `pixel_breakdown` takes one
output value of any layer kind apart; `receptive_field` finds the input pixels an output can see;
`channel_stats` measures each channel of a layer; `arithmetic` holds the convolution arithmetic (output size,
padding, strides, dilation) and the activation functions they share. Pure numpy over the layer configs of a
`network.graph.ModelGraph`: no widgets, no Keras calls.
"""
