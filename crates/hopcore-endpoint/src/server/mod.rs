//! Server role: resource framework.
