"""Applications built on the stack (their own packages; the stack never imports them except at the composition root)."""
