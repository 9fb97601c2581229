fn main() {
    println!("app");
}
