"""What a measurement records about its machine: cores, CPU model and vector ISA."""

import os

from rs_jax import machine


def test_machine_info_names_the_cpu_and_the_cores_this_process_may_use():
    info = machine.machine_info()
    assert info["cores_used"] == len(os.sched_getaffinity(0)) <= info["cpu_count"]
    assert info["cpu"] == machine.cpu_model()


def test_cpu_model_reads_name_family_model_and_avx512_of_the_first_cpu(tmp_path, monkeypatch):
    cpuinfo = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx2 avx512f avx512bw\n\n"
        "processor\t: 1\nmodel name\t: another\n"
    )
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            path = tmp_path / "cpuinfo"
            path.write_text(cpuinfo)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert machine.cpu_model() == "AMD EPYC (family 25 model 17, AVX-512)"
    cpuinfo = cpuinfo.replace(" avx512f avx512bw", "")
    assert machine.cpu_model() == "AMD EPYC (family 25 model 17, no AVX-512)"
