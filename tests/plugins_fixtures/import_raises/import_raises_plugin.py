raise ImportError("this plugin needs libfoo 2.0")
