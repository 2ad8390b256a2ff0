"""Pictures: any image a user has, made into the model's input; maps made into pictures.

`images` reads any image (path, bytes, PIL, array) into RGB uint8 and fits it to a size; `preprocessing`
turns it into what a model is fed (caffe, tf, torch...) and names the fed channels; `render` normalises
activation maps, colours them and tiles them into mosaics, encoded at the size the screen shows;
`datasets` holds the small data that ships with the package. Pure numpy and Pillow.
"""
