"""Choose robot actions from images and instructions in a joint V-L-A embedding space."""
