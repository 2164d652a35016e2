"""The floor every stage stands on: the variant (manifest + packed images, the only interface between stages),
label spaces, image decoding and the PNG writer."""
