//! PNG rendering of a `plot::Plot` without dependencies: a small rasteriser (lines, dots,
//! rings, rectangles, a 5x7 bitmap font) and a PNG encoder (zlib stream of fixed-Huffman
//! deflate with run-length matches, which is what plots of flat colours need).

use crate::plot::{Anchor, Plot, Rgb, Shape};

struct Canvas {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Canvas {
            w,
            h,
            rgb: vec![255; w * h * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        self.rgb[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
    }

    /// Every pixel whose centre lies within `r` of (cx, cy), or within `band` of the circle.
    fn disk(&mut self, cx: f64, cy: f64, r: f64, band: Option<f64>, c: Rgb) {
        let reach = r + band.unwrap_or(0.0) + 1.0;
        for y in (cy - reach).floor() as i64..=(cy + reach).ceil() as i64 {
            for x in (cx - reach).floor() as i64..=(cx + reach).ceil() as i64 {
                let d = ((x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2)).sqrt();
                let inside = match band {
                    None => d <= r,
                    Some(b) => (d - r).abs() <= b,
                };
                if inside {
                    self.set(x, y, c);
                }
            }
        }
    }

    fn line(
        &mut self,
        (x0, y0): (f64, f64),
        (x1, y1): (f64, f64),
        width: f64,
        dashed: bool,
        c: Rgb,
    ) {
        let len = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
        let steps = (len * 2.0).ceil().max(1.0) as usize;
        for k in 0..=steps {
            let t = k as f64 / steps as f64;
            // Dashes of 6 px, gaps of 4 px, as the SVG's stroke-dasharray.
            if dashed && (t * len) % 10.0 >= 6.0 {
                continue;
            }
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            if width <= 1.0 {
                self.set(x.floor() as i64, y.floor() as i64, c);
            } else {
                self.disk(x, y, width / 2.0, None, c);
            }
        }
    }

    fn text(&mut self, x: f64, baseline: f64, text: &str, anchor: Anchor, c: Rgb) {
        let width = 6.0 * text.chars().count() as f64;
        let left = match anchor {
            Anchor::Start => x,
            Anchor::Middle => x - width / 2.0,
            Anchor::End => x - width,
        }
        .round() as i64;
        let top = baseline.round() as i64 - 7;
        for (k, ch) in text.chars().enumerate() {
            for (row, bits) in glyph(ch).iter().enumerate() {
                for (col, b) in bits.bytes().enumerate() {
                    if b == b'#' {
                        self.set(left + 6 * k as i64 + col as i64, top + row as i64, c);
                    }
                }
            }
        }
    }
}

pub fn rasterise(p: &Plot) -> (usize, usize, Vec<u8>) {
    let mut c = Canvas::new(p.width as usize, p.height as usize);
    for s in &p.shapes {
        match s {
            Shape::Rect { x, y, w, h, fill } => {
                for py in y.round() as i64..(y + h).round() as i64 {
                    for px in x.round() as i64..(x + w).round() as i64 {
                        c.set(px, py, *fill);
                    }
                }
            }
            Shape::Line {
                x0,
                y0,
                x1,
                y1,
                color,
                width,
                dashed,
            } => c.line((*x0, *y0), (*x1, *y1), *width, *dashed, *color),
            Shape::Dot { x, y, r, color } => c.disk(*x, *y, *r, None, *color),
            Shape::Ring { x, y, r, color } => c.disk(*x, *y, *r, Some(0.75), *color),
            Shape::Text {
                x,
                y,
                text,
                anchor,
                color,
            } => c.text(*x, *y, text, *anchor, *color),
        }
    }
    (c.w, c.h, c.rgb)
}

pub fn to_png(p: &Plot) -> Vec<u8> {
    let (w, h, rgb) = rasterise(p);
    encode_png(w, h, &rgb)
}

/// An 8-bit RGB PNG. Rows after the first use the Up filter, so the repeated rows of a plot
/// become runs of zeros.
pub fn encode_png(w: usize, h: usize, rgb: &[u8]) -> Vec<u8> {
    let stride = w * 3;
    let mut raw = Vec::with_capacity((stride + 1) * h);
    for y in 0..h {
        let row = &rgb[y * stride..(y + 1) * stride];
        if y == 0 {
            raw.push(0);
            raw.extend_from_slice(row);
        } else {
            let prev = &rgb[(y - 1) * stride..y * stride];
            raw.push(2);
            raw.extend(row.iter().zip(prev).map(|(a, b)| a.wrapping_sub(*b)));
        }
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend((w as u32).to_be_bytes());
    ihdr.extend((h as u32).to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

pub fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// Bits in deflate order (least significant first within each byte).
struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        for i in 0..count {
            self.acc |= ((value >> i) & 1) << self.n;
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.put((code >> i) & 1, 1);
        }
    }

    fn symbol(&mut self, s: u32) {
        match s {
            0..=143 => self.code(0x30 + s, 8),
            144..=255 => self.code(0x190 + s - 144, 9),
            256..=279 => self.code(s - 256, 7),
            _ => self.code(0xc0 + s - 280, 8),
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

const LEN_BASE: [u32; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];

/// zlib stream: one final fixed-Huffman block; a byte repeating the previous one 3..258
/// times is a match at distance 1, everything else a literal.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE = fixed Huffman
    let mut i = 0;
    while i < data.len() {
        let run = if i > 0 {
            data[i..]
                .iter()
                .take(258)
                .take_while(|&&b| b == data[i - 1])
                .count()
        } else {
            0
        };
        if run >= 3 {
            let k = LEN_BASE.iter().rposition(|&b| b <= run as u32).unwrap_or(0);
            bits.symbol(257 + k as u32);
            bits.put(run as u32 - LEN_BASE[k], LEN_EXTRA[k]);
            bits.code(0, 5); // distance code 0: distance 1
            i += run;
        } else {
            bits.symbol(u32::from(data[i]));
            i += 1;
        }
    }
    bits.symbol(256);
    let mut out = bits.finish();
    out.extend(adler32(data).to_be_bytes());
    out
}

/// 5x7 glyphs; upper case is drawn as lower case, anything unknown as '?'.
fn glyph(c: char) -> [&'static str; 7] {
    match c.to_ascii_lowercase() {
        '0' => [
            ".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###.",
        ],
        '1' => [
            "..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ],
        '2' => [
            ".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####",
        ],
        '3' => [
            "#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###.",
        ],
        '4' => [
            "...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#.",
        ],
        '5' => [
            "#####", "#....", "####.", "....#", "....#", "#...#", ".###.",
        ],
        '6' => [
            "..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###.",
        ],
        '7' => [
            "#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#...",
        ],
        '8' => [
            ".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###.",
        ],
        '9' => [
            ".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##..",
        ],
        'a' => [
            ".....", ".....", ".###.", "....#", ".####", "#...#", ".####",
        ],
        'b' => [
            "#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####.",
        ],
        'c' => [
            ".....", ".....", ".###.", "#....", "#....", "#...#", ".###.",
        ],
        'd' => [
            "....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####",
        ],
        'e' => [
            ".....", ".....", ".###.", "#...#", "#####", "#....", ".###.",
        ],
        'f' => [
            "..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#...",
        ],
        'g' => [
            ".....", ".####", "#...#", "#...#", ".####", "....#", ".###.",
        ],
        'h' => [
            "#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#",
        ],
        'i' => [
            "..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###.",
        ],
        'j' => [
            "...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##..",
        ],
        'k' => [
            "#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#.",
        ],
        'l' => [
            ".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ],
        'm' => [
            ".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#",
        ],
        'n' => [
            ".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#",
        ],
        'o' => [
            ".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###.",
        ],
        'p' => [
            ".....", ".....", "####.", "#...#", "####.", "#....", "#....",
        ],
        'q' => [
            ".....", ".....", ".##.#", "#..##", ".####", "....#", "....#",
        ],
        'r' => [
            ".....", ".....", "#.##.", "##..#", "#....", "#....", "#....",
        ],
        's' => [
            ".....", ".....", ".###.", "#....", ".###.", "....#", "####.",
        ],
        't' => [
            ".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##.",
        ],
        'u' => [
            ".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#",
        ],
        'v' => [
            ".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#..",
        ],
        'w' => [
            ".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#.",
        ],
        'x' => [
            ".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#",
        ],
        'y' => [
            ".....", ".....", "#...#", "#...#", ".####", "....#", ".###.",
        ],
        'z' => [
            ".....", ".....", "#####", "...#.", "..#..", ".#...", "#####",
        ],
        ' ' => [
            ".....", ".....", ".....", ".....", ".....", ".....", ".....",
        ],
        '.' => [
            ".....", ".....", ".....", ".....", ".....", ".##..", ".##..",
        ],
        ',' => [
            ".....", ".....", ".....", ".....", ".##..", "..#..", ".#...",
        ],
        ':' => [
            ".....", ".##..", ".##..", ".....", ".##..", ".##..", ".....",
        ],
        '(' => [
            "...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#.",
        ],
        ')' => [
            ".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#...",
        ],
        '%' => [
            "##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##",
        ],
        '=' => [
            ".....", ".....", "#####", ".....", "#####", ".....", ".....",
        ],
        '-' => [
            ".....", ".....", ".....", "#####", ".....", ".....", ".....",
        ],
        '+' => [
            ".....", "..#..", "..#..", "#####", "..#..", "..#..", ".....",
        ],
        '_' => [
            ".....", ".....", ".....", ".....", ".....", ".....", "#####",
        ],
        '/' => [
            ".....", "....#", "...#.", "..#..", ".#...", "#....", ".....",
        ],
        '*' => [
            ".....", "..#..", "#.#.#", ".###.", "#.#.#", "..#..", ".....",
        ],
        _ => [
            ".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#..",
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_of_known_inputs() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    /// A deflate decoder for the two kinds of symbols the encoder writes (fixed-Huffman
    /// literals and distance-1 matches), to check the stream round-trips.
    fn inflate_fixed(z: &[u8]) -> Vec<u8> {
        let data = &z[2..z.len() - 4];
        let mut pos = 0usize;
        let mut bit = || {
            let b = (data[pos / 8] >> (pos % 8)) & 1;
            pos += 1;
            u32::from(b)
        };
        let read = |n: u32, bit: &mut dyn FnMut() -> u32| (0..n).fold(0, |v, i| v | (bit() << i));
        assert_eq!(read(3, &mut bit), 0b011, "final fixed block");
        let mut out: Vec<u8> = Vec::new();
        loop {
            // Fixed Huffman: read 7 bits MSB first, extend as the code ranges say.
            let mut code = 0;
            for _ in 0..7 {
                code = (code << 1) | bit();
            }
            let sym = if code <= 0b0010111 {
                256 + code
            } else {
                code = (code << 1) | bit();
                if (0x30..=0xbf).contains(&code) {
                    code - 0x30
                } else if (0xc0..=0xc7).contains(&code) {
                    280 + code - 0xc0
                } else {
                    code = (code << 1) | bit();
                    144 + code - 0x190
                }
            };
            match sym {
                0..=255 => out.push(sym as u8),
                256 => break,
                _ => {
                    let k = (sym - 257) as usize;
                    let len = LEN_BASE[k] + read(LEN_EXTRA[k], &mut bit);
                    let mut dist = 0;
                    for _ in 0..5 {
                        dist = (dist << 1) | bit();
                    }
                    assert_eq!(dist, 0, "distance 1");
                    let last = *out.last().unwrap();
                    out.extend(std::iter::repeat_n(last, len as usize));
                }
            }
        }
        assert_eq!(adler32(&out).to_be_bytes(), z[z.len() - 4..]);
        out
    }

    #[test]
    fn zlib_round_trips_literals_and_runs_of_every_length() {
        let mut data = vec![];
        for len in [
            1usize, 2, 3, 4, 10, 11, 12, 200, 226, 227, 257, 258, 259, 1000,
        ] {
            data.extend(std::iter::repeat_n((len % 251) as u8, len));
            data.extend([200, 7, 144, 143, 255, 0]);
        }
        let z = zlib(&data);
        assert_eq!(z[..2], [0x78, 0x01]);
        assert_eq!(inflate_fixed(&z), data);
        assert!(
            z.len() < data.len() / 4,
            "runs are compressed: {} of {}",
            z.len(),
            data.len()
        );
    }

    #[test]
    fn png_has_signature_header_and_checked_chunks() {
        let png = encode_png(2, 2, &[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]);
        assert_eq!(&png[..8], &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[16..24], &[0, 0, 0, 2, 0, 0, 0, 2]);
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
        // IDAT holds the filtered rows: filter byte 0 then 2 (Up).
        let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        let raw = inflate_fixed(&png[41..41 + idat_len]);
        assert_eq!(
            raw,
            vec![0, 255, 0, 0, 0, 255, 0, 2, 1, 0, 255, 255, 0, 255]
        );
    }
}
