//! A 128-byte EDID 1.4 base block describing one scanout's mode.

/// Largest width or height a detailed timing descriptor can carry (12 bits).
pub const EDID_MAX_DIMENSION: u32 = 4095;

/// Builds the EDID of a `width`×`height` display at 60 Hz (lower if the pixel clock would
/// not fit the 16-bit field), with the monitor name `vm-device` and serial `serial`.
/// `width` and `height` are clamped to 1..=4095.
pub fn build_edid(width: u32, height: u32, serial: u32) -> [u8; 128] {
    let w = width.clamp(1, EDID_MAX_DIMENSION);
    let h = height.clamp(1, EDID_MAX_DIMENSION);
    let mut e = [0u8; 128];
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "RVM": three 5-bit letters, big-endian.
    let id = ((b'R' - b'@') as u16) << 10 | ((b'V' - b'@') as u16) << 5 | (b'M' - b'@') as u16;
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&0x1234u16.to_le_bytes()); // product code
    e[12..16].copy_from_slice(&serial.to_le_bytes());
    e[16] = 1; // week
    e[17] = 34; // model year 2024 (years since 1990)
    e[18] = 1; // EDID 1.4
    e[19] = 4;
    e[20] = 0xa5; // digital, 8 bits per colour, DisplayPort
                  // Physical size in cm at about 96 dpi (at least 1 cm).
    e[21] = ((w as u64 * 254 / 960 / 10).clamp(1, 255)) as u8;
    e[22] = ((h as u64 * 254 / 960 / 10).clamp(1, 255)) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // sRGB default colour space, preferred timing is native
                  // sRGB chromaticity (red, green, blue, white), 10-bit fixed point.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // No established timings; the eight standard timings unused (01 01).
    for i in 0..8 {
        e[38 + 2 * i] = 0x01;
        e[39 + 2 * i] = 0x01;
    }
    e[54..72].copy_from_slice(&detailed_timing(w, h));
    // Display product name.
    e[72..90].copy_from_slice(&text_descriptor(0xfc, b"vm-device"));
    // Range limits: 50-75 Hz vertical, 30-160 kHz horizontal, 600 MHz max clock.
    e[90..108].copy_from_slice(&[
        0, 0, 0, 0xfd, 0, 50, 75, 30, 160, 60, 0x00, 0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    ]);
    // Display product serial number.
    e[108..126].copy_from_slice(&text_descriptor(0xff, format!("{serial:08}").as_bytes()));
    e[126] = 0; // no extension blocks
    let sum = e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

fn text_descriptor(tag: u8, text: &[u8]) -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = tag;
    let n = text.len().min(13);
    d[5..5 + n].copy_from_slice(&text[..n]);
    if n < 13 {
        d[5 + n] = 0x0a;
        for b in &mut d[6 + n..] {
            *b = 0x20;
        }
    }
    d
}

/// A CVT reduced-blanking style timing: 160 pixels of horizontal blanking, at least 460 µs of
/// vertical blanking approximated as 6% of the lines (min 23).
fn detailed_timing(w: u32, h: u32) -> [u8; 18] {
    let hblank = 160u32;
    let vblank = (h * 6 / 100).max(23);
    let htotal = (w + hblank) as u64;
    let vtotal = (h + vblank) as u64;
    // Pixel clock in 10 kHz units must fit 16 bits: lower the refresh if it does not.
    let mut refresh = 60u64;
    while refresh > 1 && htotal * vtotal * refresh / 10_000 > u16::MAX as u64 {
        refresh -= 1;
    }
    let clock = (htotal * vtotal * refresh)
        .div_ceil(10_000)
        .min(u16::MAX as u64) as u16;
    let (hfp, hsync, vfp, vsync) = (48u32, 32u32, 3u32, 5u32);
    let (wmm, hmm) = (w * 254 / 960, h * 254 / 960);
    let mut d = [0u8; 18];
    d[0..2].copy_from_slice(&clock.to_le_bytes());
    d[2] = w as u8;
    d[3] = hblank as u8;
    d[4] = ((w >> 8) << 4 | (hblank >> 8)) as u8;
    d[5] = h as u8;
    d[6] = vblank as u8;
    d[7] = ((h >> 8) << 4 | (vblank >> 8)) as u8;
    d[8] = hfp as u8;
    d[9] = hsync as u8;
    d[10] = ((vfp & 0xf) << 4 | (vsync & 0xf)) as u8;
    d[11] = ((hfp >> 8) << 6 | (hsync >> 8) << 4 | (vfp >> 4) << 2 | (vsync >> 4)) as u8;
    d[12] = wmm as u8;
    d[13] = hmm as u8;
    d[14] = ((wmm >> 8) << 4 | (hmm >> 8) & 0xf) as u8;
    d[17] = 0x1e; // non-interlaced, digital separate sync, +vsync, +hsync
    d
}

/// Decodes the preferred (first detailed timing) mode of an EDID base block.
pub fn preferred_mode(edid: &[u8]) -> Option<(u32, u32)> {
    let d = edid.get(54..72)?;
    let w = d[2] as u32 | ((d[4] as u32 >> 4) << 8);
    let h = d[5] as u32 | ((d[7] as u32 >> 4) << 8);
    Some((w, h))
}
