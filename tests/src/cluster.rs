//! Multi-node test clusters in network namespaces.
