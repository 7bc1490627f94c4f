"""docker/build_images.py, its pure logic: tags from the commit, fully qualified local names, the build arguments
that swap each Dockerfile's public base for one made from Debian packages, ulimits runc can set here."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest

from iotpipe.config import Config
from model_archives import archive_name, model_version
from tests.deploy.conftest import ROOT
from tests.deploy.test_dockerfiles import ALL_IMAGES, ALTERNATIVES, global_arguments, instructions


def load_build_images():
    spec = importlib.util.spec_from_file_location("build_images", ROOT / "docker" / "build_images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


build_images = load_build_images()


def test_the_tag_is_the_commit_and_differs_for_every_different_tree():
    assert build_images.image_tag("cff8f224d3a1", b"") == "cff8f224d3a1"
    one, other = build_images.image_tag("cff8f224d3a1", b"a"), build_images.image_tag("cff8f224d3a1", b"b")
    assert re.fullmatch(r"cff8f224d3a1-dirty-[0-9a-f]{8}", one) and one != other


def test_ansible_tags_the_images_with_the_same_tag_as_make_images():
    tasks = (ROOT / "ansible" / "roles" / "iotpipe_version" / "tasks" / "main.yml").read_text()
    assert "docker/build_images.py tag" in tasks


def test_images_are_fully_qualified_local_names_so_nothing_resolves_to_a_public_registry():
    for name in build_images.IMAGES:
        reference = build_images.reference(name, "36f7049")
        assert re.fullmatch(r"localhost/iotpipe/[a-z-]+:36f7049", reference), reference
    for base in build_images.BASES.values():
        assert base.reference.startswith("localhost/iotpipe/base-") and not base.reference.endswith(":latest")


def test_the_saved_archive_is_named_by_image_and_tag_under_the_git_ignored_cache():
    path = build_images.archive_path("bridge", "36f7049-dirty")
    assert path == ROOT / ".cache" / "images" / "bridge-36f7049-dirty.tar"


def test_a_base_gets_a_new_tag_when_its_packages_change():
    python = build_images.BASES["python"]
    changed = build_images.Base("python", (*python.packages, "curl"))
    assert python.tag != changed.tag and python.tag == build_images.Base("python", python.packages).tag


def test_the_tool_builds_the_images_of_the_dockerfiles_with_their_targets():
    built = {name: (ROOT / image.dockerfile, image.target) for name, image in build_images.IMAGES.items()}
    assert built == ALL_IMAGES | ALTERNATIVES
    assert {image.name for image in build_images.selected([])} == set(ALL_IMAGES)


@pytest.mark.parametrize("name", sorted(ALL_IMAGES | ALTERNATIVES))
def test_each_base_argument_replaces_a_from_of_its_dockerfile(name):
    image = build_images.IMAGES[name]
    dockerfile = ROOT / image.dockerfile
    froms = {arguments.split()[0] for instruction, arguments in instructions(dockerfile) if instruction == "FROM"}
    assert {f"${{{argument}}}" for argument in image.bases} == {base for base in froms if base.startswith("$")}
    assert set(image.bases) <= set(global_arguments(dockerfile))
    assert set(image.bases.values()) <= set(build_images.BASES)


def test_local_bases_are_passed_as_build_arguments_and_public_ones_keep_the_defaults():
    kafka = build_images.IMAGES["kafka"]
    arguments = build_images.build_arguments(kafka)
    assert arguments == [
        f"--build-arg=BUILD_IMAGE={build_images.BASES['maven'].reference}",
        f"--build-arg=BASE_IMAGE={build_images.BASES['jre'].reference}",
    ]
    assert build_images.build_arguments(kafka, public_bases=True) == []


def test_ulimits_are_explicit_and_never_above_the_hard_limits():
    assert build_images.ulimits(20000, 96365) == ["--ulimit=nofile=20000:20000", "--ulimit=nproc=4096:4096"]
    assert build_images.ulimits(1 << 20, 1000) == ["--ulimit=nofile=65536:65536", "--ulimit=nproc=1000:1000"]


def test_an_unknown_image_name_is_refused_with_the_list_of_images():
    with pytest.raises(SystemExit, match="the images are torchserve, bridge"):
        build_images.selected(["bridg"])
    alternatives = [name for name, image in build_images.IMAGES.items() if image.alternative]
    assert [image.name for image in build_images.selected([])] == [
        name for name in build_images.IMAGES if name not in alternatives
    ]
    assert [image.name for image in build_images.selected(alternatives)] == alternatives == ["mlserver"]


def test_the_hosts_trust_files_are_mounted_read_only_into_the_build_only():
    volumes = build_images.trust_volumes(["/etc/pip.conf"])
    assert volumes == ["--volume=/etc/pip.conf:/etc/pip.conf:ro"]


def test_java_trust_is_mounted_only_for_the_maven_build_stage():
    assert build_images.JAVA_TRUST in build_images.trust_files(build_images.IMAGES["kafka"])
    assert build_images.JAVA_TRUST not in build_images.trust_files(build_images.IMAGES["torchserve"])


def test_the_torchserve_image_carries_the_archive_of_the_current_build_as_its_default_version():
    config = Config()
    archive, version = archive_name(config, "resnet20"), model_version("resnet20")
    assert build_images.MODEL_ARCHIVE.name == archive
    assert f"COPY model-store/{archive} " in (ROOT / "docker" / "torchserve" / "Dockerfile").read_text()
    properties = dict(
        line.split("=", 1)
        for line in (ROOT / "docker" / "torchserve" / "config.properties").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert properties["load_models"] == archive
    models = json.loads(properties["models"])
    assert (
        models[config.model_name][version] | {"defaultVersion": True, "marName": archive}
        == models[config.model_name][version]
    )
