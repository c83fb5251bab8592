//! Client role: see issue #2 (Block-wise and Observe on top of Endpoint).
