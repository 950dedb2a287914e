//! Writes the golden vectors into `format-spec/vectors/`.

fn main() -> std::io::Result<()> {
    let dir = strata_format_spec::vectors_dir();
    std::fs::create_dir_all(&dir)?;
    for (name, value) in strata_format_spec::generate() {
        let text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)? + "\n";
        std::fs::write(dir.join(name), text)?;
        println!("wrote {name}");
    }
    Ok(())
}
