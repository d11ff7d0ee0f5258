//! The real kube-apiserver + etcd environment (tests/env/kube-up.sh) and an admin client.
