fn main() {
    eprintln!("regent-sidecar: not implemented yet");
    std::process::exit(2);
}
