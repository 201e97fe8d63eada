//! In-process apiserver on 127.0.0.1:0 for tests.
