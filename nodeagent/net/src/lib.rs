//! kube-lite-net.
