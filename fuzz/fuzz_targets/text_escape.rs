//! `escape::text` on any thread name (the bytes a program can give
//! prctl(PR_SET_NAME), and longer): what it returns holds no control
//! character, bidi control or line separator, so it cannot forge report
//! lines, drive a terminal or break the SVG's XML; and decoding its escapes
//! gives the name back, so two names never look the same.
#![no_main]

use affinity::report::escape;
use libfuzzer_sys::fuzz_target;

/// Undoes `escape::text`; None where the escapes are not its own.
fn decode(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'x' => {
                let h: String = [it.next()?, it.next()?].iter().collect();
                out.push(char::from(u8::from_str_radix(&h, 16).ok()?));
            }
            'u' => {
                if it.next()? != '{' {
                    return None;
                }
                let h: String = it.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let shown = escape::text(&name);
    assert!(escape::is_inert(&shown), "unsafe character left in {shown:?}");
    assert_eq!(decode(&shown).as_deref(), Some(name.as_ref()), "not reversible");
    assert_eq!(escape::hex(data).len(), data.len() * 2);
});
