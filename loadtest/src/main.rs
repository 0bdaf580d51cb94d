fn main() {
    eprintln!("linkloop-loadtest: not built yet");
    std::process::exit(2);
}
