//! `corekvctl`: etcdctl's commands, flags and output, for corekv (and etcd).

fn main() {
    corekv::ctl::main()
}
