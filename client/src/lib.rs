//! kube-lite API client.
