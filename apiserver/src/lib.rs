//! kube-lite apiserver.
