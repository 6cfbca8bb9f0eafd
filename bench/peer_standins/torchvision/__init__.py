"""Stand-in for torchvision: any ``torchvision.*`` module imports, any attribute is a placeholder that raises
when called.  (The package index's torchvision wheels are built against CUDA torch and cannot load their
operators against torch 2.13.0+cpu; torchonn's utilities import torchvision for data sets it does not need here.)"""

import importlib.abc
import importlib.machinery
import sys
import types


class _Anything(types.ModuleType):
    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} is not available: torchvision is a stand-in in this environment")

    def __mro_entries__(self, bases):
        return (object,)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Anything(spec.name)

    def exec_module(self, module):
        module.__path__ = []


sys.meta_path.insert(0, _Finder())
__path__ = []
__version__ = "0.0.0+stand-in"


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return importlib.import_module(f"torchvision.{name}")
