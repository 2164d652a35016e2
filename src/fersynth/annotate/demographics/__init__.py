"""Demographics of every face (paper 001): a predictor trained on UTKFace (``train``) and its
application to any variant (``predict``)."""
