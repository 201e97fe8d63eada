//! kube-lite-proxy.
