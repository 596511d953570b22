"""The attack suite: each class of bad input or abuse found so far, with the answer the stack must give."""
