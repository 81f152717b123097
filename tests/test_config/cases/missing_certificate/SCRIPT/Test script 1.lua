wd.log('hello')
