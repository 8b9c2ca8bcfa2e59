//! Where the graphs run: tract's CPU plan (the default) or a tract-cuda plan on an NVIDIA GPU
//! (`suf_gpu`), chosen by `--device` or the config's `default_device`.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// Fails in one line, before any work, when the device cannot run here.
    pub fn check(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda => suf_gpu::available(),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Device {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            other => bail!("device \"{other}\" is not one suf runs on (expected cpu or cuda)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_devices_and_names_a_wrong_one() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda);
        let e = "gpu".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("\"gpu\"") && e.contains("cpu or cuda"), "{e}");
        assert_eq!(Device::Cuda.to_string(), "cuda");
    }

    #[test]
    fn the_cpu_is_always_there() {
        Device::Cpu.check().unwrap();
    }
}
