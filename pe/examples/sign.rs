//! `cargo run -p lifeboat-pe --example sign -- KEY CERT IN OUT`: signs a PE image
//! (for trying the result by hand with sbverify or in firmware).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [key, cert, input, out] = a.as_slice() else {
        return Err("usage: sign KEY CERT IN OUT".into());
    };
    let key = lifeboat_pe::SigningKey::load(key.as_ref(), cert.as_ref())?;
    let image = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let signed = lifeboat_pe::sign(&image, &key)?;
    std::fs::write(out, signed).map_err(|e| format!("{out}: {e}"))?;
    Ok(())
}
