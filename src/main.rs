mod xml;
fn main() {}
