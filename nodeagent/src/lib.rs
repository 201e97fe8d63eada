//! kube-lite node agent.
