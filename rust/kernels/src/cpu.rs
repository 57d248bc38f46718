//! Which instruction-set path this CPU takes: [`simd_available`] is the one runtime check every
//! kernel asks before running its AVX2 code, and [`Isa`] says which of the paths a product runs.

/// True when this CPU has AVX2, FMA and F16C, so the kernels run their AVX2 code (otherwise they
/// run portable loops that give the same bits, slower; callers may choose another path).
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU also has AVX-512F, AVX-512BW and AVX-512VL: the 256-bit instructions of the
/// AVX2 path can then address 32 vector registers instead of 16, and take byte masks (every CPU
/// with VL has BW too).
fn wide_registers_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU also has AVX-512 VNNI: `vpdpbusd`, which adds four byte products straight
/// into each 32-bit sum.
fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The code path of a product. All of them give the same bits: the AVX-512 path runs the same
/// 256-bit arithmetic as the AVX2 one, in the same order per output element, and only uses the
/// extra registers to compute more output elements at once (and, in exact integer sums, byte
/// masks in place of a few AVX2 instructions); the VNNI path computes the int8 mode's exact
/// integer sums with `vpdpbusd`, and is the AVX-512 path everywhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust loops, on any CPU.
    Portable,
    /// AVX2 + FMA + F16C, 16 vector registers.
    Avx2,
    /// The AVX2 instructions with AVX-512VL's 32 vector registers (and AVX-512BW's byte masks).
    Avx512,
    /// [`Isa::Avx512`], and AVX-512 VNNI's `vpdpbusd` for the int8 mode's integer sums.
    Avx512Vnni,
}

impl Isa {
    /// The best path this CPU supports.
    pub fn detect() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            match (
                simd_available(),
                wide_registers_available(),
                vnni_available(),
            ) {
                (true, true, true) => Isa::Avx512Vnni,
                (true, true, false) => Isa::Avx512,
                (true, false, _) => Isa::Avx2,
                _ => Isa::Portable,
            }
        })
    }

    /// `self`, or the best path this CPU supports if that is lower.
    pub fn supported(self) -> Isa {
        self.min(Isa::detect())
    }

    /// Whether the path runs the AVX2 instructions.
    pub fn simd(self) -> bool {
        self != Isa::Portable
    }

    /// Whether the path has AVX-512F/BW/VL's 32 registers and byte masks.
    pub fn wide(self) -> bool {
        self >= Isa::Avx512
    }
}
