//! The `refvmm` executable: everything lives in the `refvmm` library.

fn main() {
    refvmm::main()
}
